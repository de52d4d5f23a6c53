//! Error messages that carry their causes.
//!
//! Library errors (reqwest, hyper, rustls) often say only what failed ("error sending request")
//! and keep why ("connection refused", "certificate not valid for name") in their source chain.
//! Messages an operator reads (`last_error`, logs) print the whole chain once; the error value
//! keeps the library error as its `#[source]`.

/// `err` and each distinct cause below it, joined with `: `.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_follow_once() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(super::chain(&e), "outer: connection refused");
        let same = std::io::Error::other("x");
        assert_eq!(super::chain(&same), "x");
    }
}
