//! The kernel command line of boot ISOs: validation, the `ir_pub_id` parameter, and quoting
//! for `grub.cfg`.
//!
//! isolinux passes its `APPEND` line to the kernel verbatim, so a valid single line is enough
//! there. GRUB parses `linux` arguments as a small shell (`$` expands, `;` ends a command,
//! quotes are removed) and rebuilds the command line from the resulting words, quoting words
//! that contain spaces and escaping quotes and backslashes with `\`, which the kernel does not
//! understand. So each word is single-quoted for GRUB when it is not plain, and the characters
//! GRUB would escape (`'` and `\`) are refused for every ISO.

use super::MediaError;

/// x86 `COMMAND_LINE_SIZE` is 2048 including the terminating NUL.
const MAX_CMDLINE: usize = 2047;

/// Checks a command line and returns it with `ir_pub_id=<publisher id>` appended when a
/// publisher id is set and the line does not carry it yet (Ironic's `_prepare_kernel_cmd_line`
/// pairs the two so the ramdisk can find its own ISO).
pub(crate) fn prepare(cmdline: &str, publisher_id: Option<&str>) -> Result<String, MediaError> {
    let invalid = |reason: String| MediaError::invalid("kernel command line", cmdline, reason);
    if let Some(c) = cmdline.chars().find(|c| c.is_control()) {
        return Err(invalid(format!("contains the control character {c:?}")));
    }
    if let Some(c) = cmdline.chars().find(|c| matches!(c, '\'' | '\\')) {
        return Err(invalid(format!(
            "{c:?} cannot reach the kernel unchanged through GRUB"
        )));
    }
    let words = split(cmdline).map_err(invalid)?;
    let mut line = words.join(" ");
    if let Some(id) = publisher_id {
        let existing: Vec<&str> = words
            .iter()
            .filter_map(|w| w.strip_prefix("ir_pub_id="))
            .collect();
        match existing.as_slice() {
            [] => {
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str("ir_pub_id=");
                line.push_str(id);
            }
            [one] if *one == id => {}
            _ => {
                return Err(invalid(format!(
                    "its ir_pub_id differs from the ISO publisher id {id:?}"
                )));
            }
        }
    }
    if line.len() > MAX_CMDLINE {
        return Err(MediaError::invalid(
            "kernel command line",
            format!("{}...", line.chars().take(64).collect::<String>()),
            format!(
                "is {} bytes; the kernel takes at most {MAX_CMDLINE}",
                line.len()
            ),
        ));
    }
    Ok(line)
}

/// The command line as GRUB `linux` arguments that give the kernel the same parameters.
/// `cmdline` must have passed [`prepare`].
pub(crate) fn grub_args(cmdline: &str) -> String {
    // `prepare` already split this line successfully, so splitting again cannot fail.
    let words = split(cmdline).unwrap_or_default();
    words
        .iter()
        .map(|word| {
            let plain = word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.,/:=@+%~^!".contains(c));
            if plain {
                word.clone()
            } else {
                // Kernel-style quotes group words; inside GRUB single quotes they would be
                // kept literally, so drop them and let GRUB re-quote a word with spaces.
                format!("'{}'", word.replace('"', ""))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits the way the kernel does: on spaces outside double quotes.
fn split(cmdline: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                word.push(c);
            }
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            _ => word.push(c),
        }
    }
    if quoted {
        return Err("has an unbalanced double quote".into());
    }
    if !word.is_empty() {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publisher_id_is_appended_once() {
        assert_eq!(prepare("a=1  b", Some("ID")).unwrap(), "a=1 b ir_pub_id=ID");
        assert_eq!(prepare("", Some("ID")).unwrap(), "ir_pub_id=ID");
        assert_eq!(
            prepare("ir_pub_id=ID x", Some("ID")).unwrap(),
            "ir_pub_id=ID x"
        );
        assert!(prepare("ir_pub_id=OTHER", Some("ID")).is_err());
        assert_eq!(prepare("ir_pub_id=OTHER", None).unwrap(), "ir_pub_id=OTHER");
    }

    #[test]
    fn refuses_what_cannot_be_passed_on() {
        for bad in ["a\nb", "tab\there", "it's", "back\\slash", "x=\"open"] {
            assert!(prepare(bad, None).is_err(), "{bad:?}");
        }
        assert!(prepare(&"x".repeat(2048), None).is_err());
        assert!(prepare(&"x".repeat(2047), None).is_ok());
    }

    #[test]
    fn grub_words_are_quoted_when_needed() {
        let line = prepare(
            "console=ttyS0 ipa-api-url=http://10.0.2.2:6385/v1?a=1&b=2 x=a;b$c msg=\"two words\"",
            None,
        )
        .unwrap();
        assert_eq!(
            grub_args(&line),
            "console=ttyS0 'ipa-api-url=http://10.0.2.2:6385/v1?a=1&b=2' 'x=a;b$c' 'msg=two words'"
        );
    }
}
