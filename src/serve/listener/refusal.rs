//! The answers a listener gives without a handler: 503 past its connection cap, and the
//! 400/414/431 hyper sends for a request head it cannot parse — which hyper sends with an
//! empty body. Each listener says how its error bodies look ([`Refusals`]): the API uses
//! Ironic's `{"error_message": ...}`, boot HTTP plain text.

use axum::http::StatusCode;

/// Seconds a client past the connection cap is told to wait.
pub const RETRY_AFTER_SECS: u64 = 2;

/// How a listener words its refusals.
#[derive(Clone, Copy)]
pub struct Refusals {
    pub content_type: &'static str,
    /// The body for a status and a human message.
    pub body: fn(StatusCode, &str) -> String,
}

impl std::fmt::Debug for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refusals")
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

impl Refusals {
    /// Plain text: the message and a newline.
    pub fn plain() -> Refusals {
        Refusals {
            content_type: "text/plain; charset=utf-8",
            body: |_, message| format!("{message}\n"),
        }
    }

    /// A complete HTTP/1.1 response that closes the connection.
    pub fn response(&self, status: StatusCode, message: &str, retry_after: bool) -> Vec<u8> {
        let body = (self.body)(status, message);
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self.content_type,
            body.len()
        );
        if retry_after {
            head.push_str(&format!("retry-after: {RETRY_AFTER_SECS}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body.as_bytes());
        out
    }

    /// The 503 for a connection past the cap.
    pub fn over_capacity(&self, cap: usize) -> Vec<u8> {
        self.response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "this listener is serving its maximum of {cap} connections; retry in \
                 {RETRY_AFTER_SECS} s"
            ),
            true,
        )
    }

    /// The replacement for hyper's automatic answer to an unparsable head, or `None` when
    /// `written` is not one: a status line of 400, 414 or 431 with `content-length: 0`.
    pub fn replace_parse_error(&self, written: &[u8]) -> Option<Vec<u8>> {
        let head_end = written.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&written[..head_end]).ok()?;
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| head.strip_prefix("HTTP/1.0 "))?
            .get(..3)?;
        let empty = head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("content-length: 0"));
        let message = match status {
            "400" => "the request could not be parsed as HTTP/1.1",
            "414" => "the request URI is too long (the longest accepted is 65534 bytes)",
            "431" => "the request header fields are too large",
            _ => return None,
        };
        if !empty {
            return None;
        }
        let status = StatusCode::from_bytes(status.as_bytes()).ok()?;
        Some(self.response(status, message, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_empty_parse_errors_are_replaced_and_nothing_else() {
        let r = Refusals::plain();
        let hyper_414 = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(r.replace_parse_error(hyper_414).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{out}");
        assert!(out.contains("connection: close") && out.ends_with("65534 bytes)\n"));
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(r.replace_parse_error(ok).is_none());
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n{\"a\": true}\n";
        assert!(r.replace_parse_error(with_body).is_none());
        let busy = String::from_utf8(r.over_capacity(8)).unwrap();
        assert!(busy.contains("retry-after: 2\r\n") && busy.starts_with("HTTP/1.1 503"));
    }
}
