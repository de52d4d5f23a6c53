//! Option negotiation: blksize (RFC 2348), tsize and timeout (RFC 2349), windowsize
//! (RFC 7440), granted within the `[tftp]` caps and acknowledged with an OACK (RFC 2347).
//!
//! A value outside its RFC range, an unknown option or a repeated one is ignored as if it
//! had not been sent, which RFC 2347 allows; a value above a cap is lowered to the cap.

use std::time::Duration;

use super::TftpSettings;
use super::packet::OACK;

/// RFC 2348's block sizes.
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;
/// RFC 1350's block size, used when none is negotiated.
pub const DEFAULT_BLKSIZE: u16 = 512;

/// The options a request asked for, each within its RFC range.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Asked {
    pub blksize: Option<u16>,
    pub tsize: bool,
    /// Seconds, 1-255.
    pub timeout: Option<u8>,
    pub windowsize: Option<u16>,
}

impl Asked {
    /// Records one option pair; names are case-insensitive, and the first valid value of a
    /// name counts.
    pub fn note(&mut self, key: &[u8], value: &[u8]) {
        let Ok(value) = std::str::from_utf8(value) else {
            return;
        };
        let number = |range: std::ops::RangeInclusive<u64>| {
            value.parse::<u64>().ok().filter(|v| range.contains(v))
        };
        if key.eq_ignore_ascii_case(b"blksize") && self.blksize.is_none() {
            self.blksize =
                number(u64::from(MIN_BLKSIZE)..=u64::from(MAX_BLKSIZE)).map(|v| v as u16);
        } else if key.eq_ignore_ascii_case(b"tsize") {
            self.tsize |= number(0..=u64::MAX).is_some();
        } else if key.eq_ignore_ascii_case(b"timeout") && self.timeout.is_none() {
            self.timeout = number(1..=255).map(|v| v as u8);
        } else if key.eq_ignore_ascii_case(b"windowsize") && self.windowsize.is_none() {
            self.windowsize = number(1..=65535).map(|v| v as u16);
        }
    }

    /// What a transfer of a `size`-byte file runs with under `settings`.
    pub fn agree(&self, settings: &TftpSettings, size: u64) -> Agreed {
        let mut oack = Vec::new();
        let mut grant = |name: &str, value: &dyn std::fmt::Display| {
            if oack.is_empty() {
                oack.extend_from_slice(&OACK.to_be_bytes());
            }
            oack.extend_from_slice(name.as_bytes());
            oack.push(0);
            oack.extend_from_slice(value.to_string().as_bytes());
            oack.push(0);
        };
        let blksize = match self.blksize {
            Some(asked) => {
                let b = asked.min(settings.block_size_limit);
                grant("blksize", &b);
                b
            }
            None => DEFAULT_BLKSIZE,
        };
        if self.tsize {
            grant("tsize", &size);
        }
        let mut timeout = Duration::from_millis(settings.timeout_ms);
        if let Some(secs) = self.timeout.filter(|_| settings.honour_client_timeout) {
            timeout = Duration::from_secs(secs.into());
            grant("timeout", &secs);
        }
        let windowsize = match self.windowsize {
            Some(asked) => {
                let w = asked.min(settings.window_size_limit);
                grant("windowsize", &w);
                w
            }
            None => 1,
        };
        Agreed {
            blksize,
            windowsize,
            timeout,
            oack: (!oack.is_empty()).then_some(oack),
        }
    }
}

/// What one transfer runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    pub blksize: u16,
    pub windowsize: u16,
    pub timeout: Duration,
    /// The OACK to send first; `None` when nothing was granted, so DATA starts at once.
    pub oack: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(pairs: &[(&str, &str)]) -> Asked {
        let mut a = Asked::default();
        for (k, v) in pairs {
            a.note(k.as_bytes(), v.as_bytes());
        }
        a
    }

    fn oack_text(agreed: &Agreed) -> Option<String> {
        agreed.oack.as_ref().map(|o| {
            String::from_utf8(o[2..].to_vec())
                .unwrap()
                .replace('\0', " ")
        })
    }

    #[test]
    fn granted_within_the_caps_and_acknowledged() {
        let settings = TftpSettings::default();
        let a = asked(&[
            ("blksize", "65464"),
            ("tsize", "0"),
            ("timeout", "6"),
            ("windowsize", "64"),
        ]);
        let agreed = a.agree(&settings, 8_247_232);
        assert_eq!((agreed.blksize, agreed.windowsize), (1468, 16));
        assert_eq!(agreed.timeout, Duration::from_millis(1000), "not honoured");
        assert_eq!(
            oack_text(&agreed).as_deref(),
            Some("blksize 1468 tsize 8247232 windowsize 16 ")
        );
        assert_eq!(&agreed.oack.as_ref().unwrap()[..2], &[0, 6]);
        let honouring = TftpSettings {
            honour_client_timeout: true,
            ..TftpSettings::default()
        };
        let agreed = asked(&[("timeout", "2")]).agree(&honouring, 5);
        assert_eq!(agreed.timeout, Duration::from_secs(2));
        assert_eq!(oack_text(&agreed).as_deref(), Some("timeout 2 "));
    }

    #[test]
    fn out_of_range_unknown_and_repeated_options_are_ignored() {
        let settings = TftpSettings::default();
        for bad in [
            ("blksize", "4"),
            ("blksize", "70000"),
            ("blksize", "-1"),
            ("blksize", "99999999999999999999999"),
            ("windowsize", "0"),
            ("windowsize", "65536"),
            ("timeout", "0"),
            ("timeout", "300"),
            ("tsize", "abc"),
            ("x-ironboot", "1"),
        ] {
            let agreed = asked(&[bad]).agree(&settings, 10);
            assert_eq!(agreed.oack, None, "{bad:?}");
            assert_eq!((agreed.blksize, agreed.windowsize), (512, 1), "{bad:?}");
        }
        let a = asked(&[("BlkSize", "1024"), ("blksize", "8")]);
        assert_eq!(a.blksize, Some(1024), "the first valid value counts");
        assert_eq!(asked(&[("blksize", "\u{ff}")]), Asked::default());
    }
}
