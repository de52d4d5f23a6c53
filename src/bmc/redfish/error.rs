//! What can go wrong talking to a Redfish BMC, kept apart by what the caller should do about it
//! ([`ErrorClass`]): fix driver_info or the credentials, accept that the BMC cannot do it, or
//! try again later. Every error about a call names the BMC, the method and the path; errors the
//! BMC answered carry the messages of its Redfish error body.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// What the caller can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// driver_info, a setting or the BMC's certificate must be fixed by the operator.
    Config,
    /// The BMC refused the credentials (401), or the user lacks the privilege (403).
    Auth,
    /// The BMC lacks what was asked (an action, a boot target, virtual media, sessions).
    NotSupported,
    /// The BMC answered a 4xx to a well-formed request, or something that is not Redfish.
    Rejected,
    /// No answer, a connection failure or 5xx after every attempt: try again later.
    Unavailable,
    /// The BMC accepted a power change but did not report the new state in time.
    Timeout,
}

#[derive(Debug, thiserror::Error)]
pub enum RedfishError {
    #[error("driver_info {key} = {value}: {reason}")]
    DriverInfo {
        key: &'static str,
        /// As given (never the password).
        value: String,
        reason: String,
    },

    #[error("invalid redfish settings: {key} = {value}: {reason}")]
    Settings {
        key: &'static str,
        value: String,
        reason: String,
    },

    #[error("driver_info redfish_verify_ca = {}: cannot read the CA bundle: {source}", path.display())]
    CaBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot build the HTTP client for BMC {bmc}: {source}")]
    Client {
        bmc: String,
        #[source]
        source: reqwest::Error,
    },

    #[error(
        "BMC {bmc}: {method} {path}: the BMC's TLS certificate was refused ({problem}); \
         give the BMC a certificate this conductor trusts, set redfish_verify_ca to the CA \
         bundle that signed it, or set redfish_verify_ca=false to skip verification"
    )]
    Certificate {
        bmc: String,
        method: String,
        path: String,
        problem: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("BMC {bmc}: {method} {path} failed after {attempts} attempt(s): {}",
        transport_summary(source, *timeout))]
    Unreachable {
        bmc: String,
        method: String,
        path: String,
        attempts: u32,
        /// The request timeout in force, to explain a timeout.
        timeout: Duration,
        #[source]
        source: reqwest::Error,
    },

    #[error(
        "BMC {bmc} refused the credentials of user {user:?}: {method} {path} answered \
         {status}{}; check redfish_username and redfish_password",
        Messages(messages)
    )]
    Unauthorized {
        bmc: String,
        method: String,
        path: String,
        status: u16,
        user: String,
        messages: Vec<String>,
    },

    #[error("BMC {bmc}: {method} {path} answered {status}{}{}", Messages(messages),
        Attempts(*attempts))]
    Status {
        bmc: String,
        method: String,
        path: String,
        status: u16,
        attempts: u32,
        /// `error.message` and every `@Message.ExtendedInfo[].Message` (with its Resolution).
        messages: Vec<String>,
    },

    #[error("BMC {bmc}: {method} {path}: unexpected answer: {reason}")]
    InvalidResponse {
        bmc: String,
        method: String,
        path: String,
        reason: String,
    },

    #[error("BMC {bmc} does not support {what}: {detail}")]
    NotSupported {
        bmc: String,
        what: String,
        detail: String,
    },

    #[error("BMC {bmc}: {}", system_problem(system_id.as_deref(), members))]
    SystemNotFound {
        bmc: String,
        /// driver_info `redfish_system_id`, when given.
        system_id: Option<String>,
        /// Every `@odata.id` of the Systems collection.
        members: Vec<String>,
    },

    #[error(
        "BMC {bmc}: system {system} did not reach power state {want} within {} s \
         (power_state_change_timeout_secs); last state seen: {seen}",
        timeout.as_secs_f64()
    )]
    PowerTimeout {
        bmc: String,
        system: String,
        want: String,
        seen: String,
        timeout: Duration,
    },

    #[error(
        "BMC {bmc}: system {system} has no virtual media slot for {kind} (slots: {})",
        list_or_none(slots)
    )]
    NoMediaSlot {
        bmc: String,
        system: String,
        kind: String,
        /// Each slot as `path [MediaTypes]`.
        slots: Vec<String>,
    },

    #[error(
        "BMC {bmc}: system {system} has no virtual media (looked under {}); the BMC may need \
         a virtual media licence or does not offer it over Redfish",
        list_or_none(searched)
    )]
    NoVirtualMedia {
        bmc: String,
        system: String,
        searched: Vec<String>,
    },
}

impl RedfishError {
    pub fn class(&self) -> ErrorClass {
        use RedfishError::*;
        match self {
            DriverInfo { .. }
            | Settings { .. }
            | CaBundle { .. }
            | Client { .. }
            | Certificate { .. }
            | SystemNotFound { .. } => ErrorClass::Config,
            Unauthorized { .. } => ErrorClass::Auth,
            NotSupported { .. } | NoMediaSlot { .. } | NoVirtualMedia { .. } => {
                ErrorClass::NotSupported
            }
            Status { status: 403, .. } => ErrorClass::Auth,
            Status { status, .. } if *status >= 500 => ErrorClass::Unavailable,
            Status { .. } | InvalidResponse { .. } => ErrorClass::Rejected,
            Unreachable { .. } => ErrorClass::Unavailable,
            PowerTimeout { .. } => ErrorClass::Timeout,
        }
    }

    /// True when the same call may succeed later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self.class(), ErrorClass::Unavailable | ErrorClass::Timeout)
    }

    /// What the operator should do, for errors whose message does not already say it (the
    /// ones about driver_info, credentials, certificates and system ids do).
    pub fn advice(&self) -> Option<&'static str> {
        use RedfishError::*;
        match self {
            Status { status: 403, .. } => Some(
                "the BMC user lacks the privilege for this call: give redfish_username a role \
                 that may change power, boot and virtual media (e.g. Administrator)",
            ),
            NotSupported { .. } | NoMediaSlot { .. } => Some(
                "this BMC cannot do what the node's interfaces ask: pick interfaces it \
                 supports (e.g. boot_interface pxe or ipxe instead of redfish-virtual-media) \
                 or update its firmware",
            ),
            Status { status, .. } if *status >= 500 => Some(
                "the BMC failed to carry out the call; check its health (its log, a BMC \
                 reset), then retry",
            ),
            Unreachable { .. } => Some(
                "check that the BMC is up and that this conductor reaches redfish_address \
                 (address, port, firewall), then retry",
            ),
            Status { .. } | InvalidResponse { .. } => Some(
                "the BMC refused the request; its messages say why: check driver_info and \
                 that the BMC's firmware supports the call",
            ),
            PowerTimeout { .. } => Some(
                "the BMC accepted the power change but did not report it in time: check the \
                 node, or raise [redfish] power_state_change_timeout_secs",
            ),
            DriverInfo { .. }
            | Settings { .. }
            | CaBundle { .. }
            | Client { .. }
            | Certificate { .. }
            | Unauthorized { .. }
            | SystemNotFound { .. }
            | NoVirtualMedia { .. } => None,
        }
    }

    /// The HTTP status the BMC answered, when the error is about an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            RedfishError::Status { status, .. } | RedfishError::Unauthorized { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// A [`RedfishError`] followed by its [`RedfishError::advice`]: what interfaces report, so a
/// node's `last_error` names the BMC, what failed and what to do.
/// Boxed: a `RedfishError` is large, and this travels inside other errors' `Result`s.
#[derive(Debug)]
pub struct Advised(Box<RedfishError>);

impl Advised {
    pub fn new(e: RedfishError) -> Self {
        Advised(Box::new(e))
    }

    /// The error being advised on.
    pub fn error(&self) -> &RedfishError {
        &self.0
    }
}

impl fmt::Display for Advised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.advice() {
            Some(advice) => write!(f, "{}; {advice}", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for Advised {
    /// The wrapped error's own cause: its text is already part of this one's.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self.0.as_ref())
    }
}

impl From<RedfishError> for Advised {
    fn from(e: RedfishError) -> Self {
        Advised::new(e)
    }
}

/// `: message; message` or nothing.
struct Messages<'a>(&'a [String]);

impl fmt::Display for Messages<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, ": {}", self.0.join("; "))
        }
    }
}

/// ` (after N attempts)` when the call was retried.
struct Attempts(u32);

impl fmt::Display for Attempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 > 1 {
            write!(f, " (after {} attempts)", self.0)
        } else {
            Ok(())
        }
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

fn system_problem(system_id: Option<&str>, members: &[String]) -> String {
    match (system_id, members.len()) {
        (Some(id), _) => format!(
            "redfish_system_id {id:?} is not a member of the Systems collection (members: {})",
            list_or_none(members)
        ),
        (None, 0) => "the Systems collection is empty".to_string(),
        (None, _) => format!(
            "the BMC manages several systems ({}); set driver_info redfish_system_id to one of them",
            members.join(", ")
        ),
    }
}

/// What a transport failure was, in words an operator can act on, followed by its causes.
fn transport_summary(err: &reqwest::Error, timeout: Duration) -> String {
    let what = if err.is_timeout() {
        format!(
            "no answer within {} s (request_timeout_secs)",
            timeout.as_secs_f64()
        )
    } else if err.is_connect() {
        "cannot connect".to_string()
    } else {
        "the connection failed".to_string()
    };
    format!("{what}: {}", crate::error_chain::chain(err))
}

/// The messages of a Redfish error body (or of `@Message.ExtendedInfo` on any answer):
/// `error.message`, then each `ExtendedInfo` entry's `Message` (or its `MessageId` when it has
/// no text) with its `Resolution`. Duplicates are dropped.
pub(crate) fn redfish_messages(body: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !s.is_empty() && !out.contains(&s) {
            out.push(s);
        }
    };
    let error = body.get("error");
    if let Some(m) = error.and_then(|e| e.get("message")).and_then(Value::as_str) {
        push(m.trim().to_string());
    }
    let infos = [error, Some(body)]
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("@Message.ExtendedInfo"))
        .filter_map(Value::as_array)
        .flatten();
    for info in infos {
        let text = info
            .get("Message")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .or_else(|| info.get("MessageId").and_then(Value::as_str));
        let Some(text) = text else { continue };
        match info
            .get("Resolution")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|r| !r.is_empty() && *r != "None")
        {
            Some(res) => push(format!("{text} (resolution: {res})")),
            None => push(text.to_string()),
        }
    }
    // A MessageId alone says little when the body also has a message.
    if out.len() > 1 {
        let generic = |m: &String| m.starts_with("Base.") && !m.contains(' ');
        if out.iter().any(|m| !generic(m)) {
            out.retain(|m| !generic(m));
        }
    }
    out
}

/// The start of a non-JSON body, on one line, as the only "message" of an error answer.
pub(crate) fn text_excerpt(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(300) {
        Some((cut, _)) => Some(format!("{}…", &one_line[..cut])),
        None if one_line.is_empty() => None,
        None => Some(one_line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_come_from_error_and_extended_info() {
        let body = json!({"error": {
            "code": "Base.1.0.GeneralError",
            "message": "A general error has occurred. See ExtendedInfo for more information.",
            "@Message.ExtendedInfo": [
                {"MessageId": "Base.1.8.PropertyValueNotInList",
                 "Message": "The value Floppy for the property BootSourceOverrideTarget is not in the list of acceptable values.",
                 "Resolution": "Choose a value from the enumeration list and resubmit."},
                {"MessageId": "iLO.2.14.UnsupportedOperation"},
            ]
        }});
        assert_eq!(
            redfish_messages(&body),
            vec![
                "A general error has occurred. See ExtendedInfo for more information.".to_string(),
                "The value Floppy for the property BootSourceOverrideTarget is not in the list of acceptable values. (resolution: Choose a value from the enumeration list and resubmit.)".to_string(),
                "iLO.2.14.UnsupportedOperation".to_string(),
            ]
        );
    }

    #[test]
    fn sushy_style_bodies_keep_the_message_only() {
        // sushy-tools: a message and an ExtendedInfo entry with a MessageId and no text.
        let body = json!({"error": {"code": "Base.1.0.GeneralError",
            "message": "Fake system nope was not found",
            "@Message.ExtendedInfo": [{"MessageId": "Base.1.0.GeneralError"}]}});
        assert_eq!(
            redfish_messages(&body),
            vec!["Fake system nope was not found"]
        );
        // Top-level ExtendedInfo (some BMCs put it on the answer itself), no duplicates.
        let body = json!({"@Message.ExtendedInfo": [
            {"Message": "Media inserted.", "Resolution": "None"},
            {"Message": "Media inserted."}]});
        assert_eq!(redfish_messages(&body), vec!["Media inserted."]);
        assert!(redfish_messages(&json!(null)).is_empty());
        assert!(redfish_messages(&json!({"error": "not an object"})).is_empty());
    }

    #[test]
    fn status_errors_name_bmc_call_and_messages() {
        let e = RedfishError::Status {
            bmc: "https://10.0.0.5".into(),
            method: "POST".into(),
            path: "/redfish/v1/Managers/1/VirtualMedia/2/Actions/VirtualMedia.InsertMedia".into(),
            status: 400,
            attempts: 1,
            messages: vec!["The image URL is not reachable.".into()],
        };
        assert_eq!(
            e.to_string(),
            "BMC https://10.0.0.5: POST /redfish/v1/Managers/1/VirtualMedia/2/Actions/VirtualMedia.InsertMedia answered 400: The image URL is not reachable."
        );
        assert_eq!(e.class(), ErrorClass::Rejected);
        assert!(!e.is_transient());
        let e = RedfishError::Status {
            bmc: "b".into(),
            method: "GET".into(),
            path: "/p".into(),
            status: 503,
            attempts: 3,
            messages: vec![],
        };
        assert_eq!(
            e.to_string(),
            "BMC b: GET /p answered 503 (after 3 attempts)"
        );
        assert!(e.is_transient());
    }

    #[test]
    fn system_errors_say_what_to_set() {
        let members = vec![
            "/redfish/v1/Systems/1".to_string(),
            "/redfish/v1/Systems/2".to_string(),
        ];
        let e = RedfishError::SystemNotFound {
            bmc: "b".into(),
            system_id: None,
            members: members.clone(),
        };
        let text = e.to_string();
        assert!(text.contains("redfish_system_id"), "{text}");
        assert!(text.contains("/redfish/v1/Systems/2"), "{text}");
        let e = RedfishError::SystemNotFound {
            bmc: "b".into(),
            system_id: Some("7".into()),
            members,
        };
        assert!(e.to_string().contains("\"7\" is not a member"), "{e}");
        assert_eq!(e.class(), ErrorClass::Config);
    }

    #[test]
    fn advice_follows_the_class_unless_the_message_has_it() {
        let unreachable_like = RedfishError::Status {
            bmc: "https://10.0.0.5".into(),
            method: "GET".into(),
            path: "/redfish/v1/".into(),
            status: 503,
            attempts: 2,
            messages: vec![],
        };
        let text = Advised::new(unreachable_like).to_string();
        assert!(
            text.starts_with("BMC https://10.0.0.5: GET /redfish/v1/ answered 503"),
            "{text}"
        );
        assert!(
            text.contains("; the BMC failed to carry out the call"),
            "{text}"
        );
        let no_vmedia = RedfishError::NoVirtualMedia {
            bmc: "b".into(),
            system: "/s".into(),
            searched: vec![],
        };
        assert_eq!(
            Advised::new(no_vmedia)
                .to_string()
                .matches("licence")
                .count(),
            1
        );
        let refused = RedfishError::Status {
            bmc: "b".into(),
            method: "POST".into(),
            path: "/p".into(),
            status: 403,
            attempts: 1,
            messages: vec![],
        };
        assert!(refused.advice().unwrap().contains("privilege"));
    }

    #[test]
    fn excerpts_are_one_line_and_bounded() {
        assert_eq!(
            text_excerpt(b"  Service\n Unavailable "),
            Some("Service Unavailable".into())
        );
        assert_eq!(text_excerpt(b"   "), None);
        let long = "x".repeat(1000);
        assert_eq!(text_excerpt(long.as_bytes()).unwrap().chars().count(), 301);
    }
}
