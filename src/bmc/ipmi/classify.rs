//! Reading ipmitool's stderr: which kind of failure it reports, and the lines worth showing.
//!
//! ipmitool's exit code only says "something failed"; a wrong password and a BMC that is not
//! there both end in `Error: Unable to establish IPMI v2 / RMCP+ session`. ironboot runs it
//! with `-v`, which adds the reason (`RAKP 2 HMAC is invalid` vs `Get Auth Capabilities
//! error`), and LC_ALL=C, so the messages below are stable. Matching is case-insensitive.

/// Output kept in errors and logs, after noise removal.
const STDERR_KEPT: usize = 1500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// The BMC refused the session: credentials, privilege level or cipher suite.
    Authentication,
    /// Nothing answered.
    Unreachable,
    /// The BMC is there but busy (Ironic's retryable list): worth another try.
    Busy,
    /// A completion code refused the command itself.
    Refused,
    Other,
}

impl FailureKind {
    pub(crate) fn retryable(self) -> bool {
        matches!(
            self,
            FailureKind::Unreachable | FailureKind::Busy | FailureKind::Other
        )
    }
}

/// Ironic's retryable messages (`ipmitool.IPMITOOL_RETRYABLE_FAILURES` plus its defaults).
const BUSY: &[&str] = &[
    "insufficient resources for session",
    "node busy",
    "bmc initialization in progress",
    "out of space",
    "timeout",
];

const AUTHENTICATION: &[&str] = &[
    "rakp 2 hmac is invalid",
    "rakp 2 message indicates an error",
    "rakp 4 message indicates an error",
    "rakp 4 hmac",
    "unauthorized name",
    "open session response message",
    "no matching cipher suite",
    "unsupported cipher suite",
    "invalid authentication algorithm",
    "activate session command failed",
    "activate session error",
    "set session privilege level",
];

const UNREACHABLE: &[&str] = &[
    "get auth capabilities",
    "get channel authentication capabilities",
    "no response from remote controller",
    "address lookup for",
    // Without a reason (an older ipmitool, or a silent drop mid-handshake).
    "unable to establish",
];

/// What a failed run (non-zero exit) means.
pub(crate) fn failure_kind(stderr: &str) -> FailureKind {
    let text = stderr.to_ascii_lowercase();
    let has = |list: &[&str]| list.iter().any(|p| text.contains(p));
    if has(BUSY) {
        FailureKind::Busy
    } else if has(AUTHENTICATION) {
        FailureKind::Authentication
    } else if has(UNREACHABLE) {
        FailureKind::Unreachable
    } else if text.lines().any(is_refusal) {
        FailureKind::Refused
    } else {
        FailureKind::Other
    }
}

/// A completion-code line: `... failed: Insufficient privilege level`,
/// `Unable to send RAW command (... rsp=0xcc): Invalid data field in request`.
fn is_refusal(line: &str) -> bool {
    line.contains("failed:") || line.contains("rsp=0x")
}

/// Lines `-v` adds on every run, which say nothing about the command.
const NOISE: &[&str] = &[
    "loading iana pen registry",
    "running get vso capabilities",
    "invalid completion code received: invalid command",
    "discovered ipmb address",
    "get hpm.x capabilities request failed",
];

/// stderr without the noise, one `; `-joined line, clipped.
pub(crate) fn clean_stderr(stderr: &str) -> String {
    let kept: Vec<&str> = stderr
        .lines()
        .map(|l| l.trim().trim_start_matches("> ").trim())
        .filter(|l| !l.is_empty())
        .filter(|l| {
            let low = l.to_ascii_lowercase();
            !NOISE.iter().any(|n| low.starts_with(n))
        })
        .collect();
    if kept.is_empty() {
        return "(nothing on stderr)".to_string();
    }
    clip(&kept.join("; "))
}

/// The lines of stderr that start with `prefix` and report a failure, e.g. the
/// `Set Chassis Boot Parameter 5 failed: ...` that `chassis bootdev` prints with exit code 0.
pub(crate) fn refusal_lines(stderr: &str, prefix: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(prefix) && is_refusal(l))
        .collect();
    (!lines.is_empty()).then(|| clip(&lines.join("; ")))
}

pub(crate) fn clip(text: &str) -> String {
    if text.len() <= STDERR_KEPT {
        return text.to_string();
    }
    let mut cut = STDERR_KEPT;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from ipmitool 1.8.19 -v against ipmi_sim 2.0.33 and a closed port.
    const WRONG_PASSWORD: &str = "Loading IANA PEN Registry...\n> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session\n";
    const UNKNOWN_USER: &str = "Loading IANA PEN Registry...\nRAKP 2 message indicates an error : unauthorized name\nError: Unable to establish IPMI v2 / RMCP+ session\n";
    const NO_BMC: &str = "Loading IANA PEN Registry...\nGet Auth Capabilities error\nError issuing Get Channel Authentication Capabilities request\nError: Unable to establish IPMI v2 / RMCP+ session\n";
    const LAN_WRONG_PASSWORD: &str = "Loading IANA PEN Registry...\nActivate Session command failed\nError: Unable to establish LAN session\nError: Unable to establish IPMI v1.5 / RMCP session\n";
    const LAN_NO_BMC: &str = "Loading IANA PEN Registry...\nGet Auth Capabilities command failed\nError: Unable to establish LAN session\nError: Unable to establish IPMI v1.5 / RMCP session\n";
    const SUITE_17: &str = "Loading IANA PEN Registry...\nError in open session response message : invalid authentication algorithm\n\nError: Unable to establish IPMI v2 / RMCP+ session\n";
    const LOW_PRIVILEGE_ON: &str = "Loading IANA PEN Registry...\nRunning Get VSO Capabilities my_addr 0x20, transit 0, target 0x20\nInvalid completion code received: Invalid command\nDiscovered IPMB address 0x0\nGet HPM.x Capabilities request failed, compcode = d4\nSet Chassis Power Control to Up/On failed: Insufficient privilege level\n";
    const RAW_REFUSED: &str = "Unable to send RAW command (channel=0x0 netfn=0x0 lun=0x0 cmd=0x8 rsp=0xcc): Invalid data field in request\n";
    const BUSY_SESSION: &str = "Error in open session response message : insufficient resources for session\nError: Unable to establish IPMI v2 / RMCP+ session\n";

    #[test]
    fn failures_are_told_apart() {
        assert_eq!(failure_kind(WRONG_PASSWORD), FailureKind::Authentication);
        assert_eq!(failure_kind(UNKNOWN_USER), FailureKind::Authentication);
        assert_eq!(
            failure_kind(LAN_WRONG_PASSWORD),
            FailureKind::Authentication
        );
        assert_eq!(failure_kind(SUITE_17), FailureKind::Authentication);
        assert_eq!(failure_kind(NO_BMC), FailureKind::Unreachable);
        assert_eq!(failure_kind(LAN_NO_BMC), FailureKind::Unreachable);
        assert_eq!(failure_kind(LOW_PRIVILEGE_ON), FailureKind::Refused);
        assert_eq!(failure_kind(RAW_REFUSED), FailureKind::Refused);
        assert_eq!(failure_kind(BUSY_SESSION), FailureKind::Busy);
        assert_eq!(failure_kind("segfault\n"), FailureKind::Other);
        assert!(!FailureKind::Authentication.retryable());
        assert!(!FailureKind::Refused.retryable());
        assert!(FailureKind::Unreachable.retryable());
    }

    #[test]
    fn noise_is_dropped_and_reasons_kept() {
        assert_eq!(
            clean_stderr(LOW_PRIVILEGE_ON),
            "Set Chassis Power Control to Up/On failed: Insufficient privilege level"
        );
        assert_eq!(
            clean_stderr(WRONG_PASSWORD),
            "RAKP 2 HMAC is invalid; Error: Unable to establish IPMI v2 / RMCP+ session"
        );
        assert_eq!(
            clean_stderr("Loading IANA PEN Registry...\n"),
            "(nothing on stderr)"
        );
        let long = "x".repeat(5000);
        assert!(clean_stderr(&long).len() < 1600);
    }

    #[test]
    fn refusals_printed_with_exit_code_0_are_found() {
        let bootdev = "Get HPM.x Capabilities request failed, compcode = d4\nSet Chassis Boot Parameter 4 failed: Insufficient privilege level\nSet Chassis Boot Parameter 5 failed: Insufficient privilege level\n";
        assert_eq!(
            refusal_lines(bootdev, "Set Chassis Boot Parameter 5").as_deref(),
            Some("Set Chassis Boot Parameter 5 failed: Insufficient privilege level")
        );
        assert_eq!(
            refusal_lines("Set Boot Device to pxe\n", "Set Chassis Boot Parameter 5"),
            None
        );
    }
}
