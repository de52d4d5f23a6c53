//! TFTP packets (RFC 1350): what a client sends is parsed here, what the server sends is
//! built here. Nothing parsed is trusted yet: names go through the confinement and
//! options through [`super::options`].

use super::options::Asked;

pub const RRQ: u16 = 1;
pub const WRQ: u16 = 2;
pub const DATA: u16 = 3;
pub const ACK: u16 = 4;
pub const ERROR: u16 = 5;
pub const OACK: u16 = 6;

/// Longest client ERROR message kept for the log.
const MAX_CLIENT_MESSAGE: usize = 120;

/// A read or write request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub write: bool,
    pub name: &'a str,
    pub options: Asked,
}

/// Why a datagram to the listen port is not a request ironboot can act on.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("not a request (opcode {0})")]
    NotRequest(u16),
    #[error("shorter than an opcode")]
    Short,
    #[error("request not NUL-terminated")]
    Unterminated,
    #[error("request without a transfer mode")]
    NoMode,
    #[error("file name is not UTF-8")]
    NameNotUtf8,
    #[error("unknown transfer mode {0:?}")]
    Mode(String),
}

impl Malformed {
    /// The ERROR a sender gets, if any. Only a whole request that cannot be served is
    /// answered; a datagram that may not be TFTP at all (or a stray packet of a transfer)
    /// gets silence, so junk at the port is not reflected at whatever address it claims.
    pub fn answer(&self) -> Option<(u16, String)> {
        match self {
            Malformed::NameNotUtf8 => Some((1, self.to_string())),
            Malformed::Mode(_) => Some((4, self.to_string())),
            _ => None,
        }
    }

    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Malformed::NotRequest(_) => "not_a_request",
            Malformed::NameNotUtf8 => "name_not_utf8",
            Malformed::Mode(_) => "bad_mode",
            _ => "malformed",
        }
    }
}

/// Parses a datagram sent to the listen port. The mode must be `octet` or `netascii`
/// (served as octet: boot files are binary); option pairs follow it, and a name without
/// a value at the end is dropped.
pub fn parse_request(packet: &[u8]) -> Result<Request<'_>, Malformed> {
    let [hi, lo, body @ ..] = packet else {
        return Err(Malformed::Short);
    };
    let write = match u16::from_be_bytes([*hi, *lo]) {
        RRQ => false,
        WRQ => true,
        other => return Err(Malformed::NotRequest(other)),
    };
    let body = body.strip_suffix(&[0]).ok_or(Malformed::Unterminated)?;
    let mut fields = body.split(|&b| b == 0);
    // split always yields at least one (possibly empty) field.
    let name = fields.next().unwrap_or_default();
    let mode = fields.next().ok_or(Malformed::NoMode)?;
    let name = std::str::from_utf8(name).map_err(|_| Malformed::NameNotUtf8)?;
    if !(mode.eq_ignore_ascii_case(b"octet") || mode.eq_ignore_ascii_case(b"netascii")) {
        let shown: String = String::from_utf8_lossy(mode).chars().take(32).collect();
        return Err(Malformed::Mode(shown));
    }
    let mut options = Asked::default();
    while let (Some(key), Some(value)) = (fields.next(), fields.next()) {
        options.note(key, value);
    }
    Ok(Request {
        write,
        name,
        options,
    })
}

/// What a client sends during a transfer.
#[derive(Debug, PartialEq, Eq)]
pub enum FromClient {
    Ack(u16),
    Error {
        code: u16,
        message: String,
    },
    /// Anything else (a stray DATA, a repeated request, junk): ignored.
    Other,
}

pub fn parse_from_client(packet: &[u8]) -> FromClient {
    let [op_hi, op_lo, hi, lo, rest @ ..] = packet else {
        return FromClient::Other;
    };
    let number = u16::from_be_bytes([*hi, *lo]);
    match u16::from_be_bytes([*op_hi, *op_lo]) {
        ACK => FromClient::Ack(number),
        ERROR => {
            let text = rest.split(|&b| b == 0).next().unwrap_or_default();
            let message = String::from_utf8_lossy(text)
                .chars()
                .take(MAX_CLIENT_MESSAGE)
                .collect();
            FromClient::Error {
                code: number,
                message,
            }
        }
        _ => FromClient::Other,
    }
}

/// An ERROR packet.
pub fn error(code: u16, message: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + message.len());
    p.extend_from_slice(&ERROR.to_be_bytes());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(message.as_bytes());
    p.push(0);
    p
}

/// The 4-byte header of DATA block `block` (its number on the wire wraps past 65535).
pub fn data_header(block: u64) -> [u8; 4] {
    let [hi, lo] = (block as u16).to_be_bytes();
    let [op_hi, op_lo] = DATA.to_be_bytes();
    [op_hi, op_lo, hi, lo]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(body: &[u8]) -> Vec<u8> {
        let mut p = vec![0, 1];
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn requests_parse_with_their_options() {
        let p = rrq(b"pxelinux.0\0OCTET\0tsize\x000\0BLKSIZE\x001432\0");
        let r = parse_request(&p).unwrap();
        assert!(!r.write);
        assert_eq!(r.name, "pxelinux.0");
        assert!(r.options.tsize);
        assert_eq!(r.options.blksize, Some(1432));
        let mut w = vec![0, 2];
        w.extend_from_slice(b"up\0netascii\0blksize\0");
        let r = parse_request(&w).unwrap();
        assert!(r.write);
        assert_eq!(
            r.options,
            Asked::default(),
            "a name without a value is dropped"
        );
    }

    #[test]
    fn malformed_requests_say_why_and_only_whole_ones_are_answered() {
        let cases: &[(&[u8], Malformed, Option<u16>)] = &[
            (b"", Malformed::Short, None),
            (b"\0", Malformed::Short, None),
            (b"\0\x04\0\x01", Malformed::NotRequest(4), None),
            (b"\0\x01f", Malformed::Unterminated, None),
            (b"\0\x01f\0", Malformed::NoMode, None),
            (b"\0\x01\0", Malformed::NoMode, None),
            (b"\0\x01\xff\0octet\0", Malformed::NameNotUtf8, Some(1)),
            (b"\0\x01f\0mail\0", Malformed::Mode("mail".into()), Some(4)),
        ];
        for (packet, want, answered) in cases {
            assert_eq!(parse_request(packet).unwrap_err(), *want, "{packet:?}");
            assert_eq!(want.answer().map(|a| a.0), *answered, "{packet:?}");
        }
    }

    #[test]
    fn client_packets_and_server_packets() {
        assert_eq!(parse_from_client(&[0, 4, 1, 2]), FromClient::Ack(258));
        assert_eq!(
            parse_from_client(b"\0\x05\0\x08no thanks\0junk"),
            FromClient::Error {
                code: 8,
                message: "no thanks".into()
            }
        );
        assert_eq!(parse_from_client(&[0, 4, 1]), FromClient::Other);
        assert_eq!(parse_from_client(&[0, 3, 0, 1, 9]), FromClient::Other);
        assert_eq!(error(1, "File not found"), b"\0\x05\0\x01File not found\0");
        assert_eq!(data_header(1), [0, 3, 0, 1]);
        assert_eq!(data_header(65_536 + 7), [0, 3, 0, 7], "block numbers wrap");
    }
}
