//! A firmware-like HTTP/1.1 client: GETs on one kept-alive connection (a new one only when
//! the server closed it between requests, as iPXE does), the body streamed through a
//! CRC-32, nothing kept. Minimal on purpose: the client shares the cores with the server.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const READ: usize = 256 * 1024;
const MAX_HEAD: usize = 16 * 1024;

/// One node's HTTP connection (opened on first use).
pub struct Client {
    server: SocketAddr,
    conn: Option<TcpStream>,
    buf: Vec<u8>,
    /// Bytes read past the previous response (none with a well-behaved server).
    pending: usize,
    timeout: Duration,
    pub connections: u32,
}

pub struct Got {
    pub len: u64,
    pub crc: u32,
}

impl Client {
    pub fn new(server: SocketAddr, timeout: Duration) -> Self {
        Self {
            server,
            conn: None,
            buf: vec![0; READ],
            pending: 0,
            timeout,
            connections: 0,
        }
    }

    /// GETs `path`; a kept-alive connection the server closed before answering is replaced once.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Got> {
        let reused = self.conn.is_some();
        match tokio::time::timeout(self.timeout, self.get_once(path)).await {
            Ok(Ok(got)) => Ok(got),
            Ok(Err(e)) if reused && e.downcast_ref::<ClosedEarly>().is_some() => {
                self.conn = None;
                tokio::time::timeout(self.timeout, self.get_once(path))
                    .await
                    .with_context(|| format!("GET {path}: timed out"))?
            }
            Ok(Err(e)) => Err(e),
            Err(_) => bail!("GET {path}: timed out after {:?}", self.timeout),
        }
    }

    async fn get_once(&mut self, path: &str) -> anyhow::Result<Got> {
        if self.conn.is_none() {
            let s = TcpStream::connect(self.server)
                .await
                .context("connecting")?;
            s.set_nodelay(true)?;
            self.conn = Some(s);
            self.connections += 1;
            self.pending = 0;
        }
        let conn = self.conn.as_mut().context("no connection")?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: boot\r\nUser-Agent: iPXE/1.21.1\r\nConnection: keep-alive\r\n\r\n"
        );
        conn.write_all(req.as_bytes())
            .await
            .map_err(|_| ClosedEarly)?;
        let (head_end, filled) = read_head(conn, &mut self.buf, self.pending).await?;
        let head = std::str::from_utf8(&self.buf[..head_end]).context("head not UTF-8")?;
        let (len, close) = parse_head(head).with_context(|| format!("GET {path}"))?;
        let mut hasher = crc32fast::Hasher::new();
        let already = (filled - head_end).min(usize::try_from(len).unwrap_or(usize::MAX));
        hasher.update(&self.buf[head_end..head_end + already]);
        let mut got = already as u64;
        let extra = filled - head_end - already;
        self.buf.copy_within(head_end + already..filled, 0);
        self.pending = extra;
        while got < len {
            let want = usize::try_from(len - got).unwrap_or(READ).min(READ);
            let n = conn
                .read(&mut self.buf[..want])
                .await
                .context("reading body")?;
            if n == 0 {
                bail!("GET {path}: connection closed after {got} of {len} body bytes");
            }
            hasher.update(&self.buf[..n]);
            got += n as u64;
        }
        if close {
            self.conn = None;
        }
        Ok(Got {
            len: got,
            crc: hasher.finalize(),
        })
    }
}

/// The server closed a kept-alive connection before answering (not an error for firmware).
#[derive(Debug, thiserror::Error)]
#[error("connection closed before the response")]
struct ClosedEarly;

/// Reads until the end of the head; returns (head length incl. CRLFCRLF, bytes in `buf`).
async fn read_head(
    conn: &mut TcpStream,
    buf: &mut [u8],
    mut filled: usize,
) -> anyhow::Result<(usize, usize)> {
    loop {
        if let Some(i) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok((i + 4, filled));
        }
        if filled >= MAX_HEAD {
            bail!("response head over {MAX_HEAD} bytes");
        }
        let n = conn
            .read(&mut buf[filled..])
            .await
            .context("reading head")?;
        if n == 0 {
            if filled == 0 {
                return Err(ClosedEarly.into());
            }
            bail!("connection closed inside the response head");
        }
        filled += n;
    }
}

/// Status must be 200; returns Content-Length and whether the server closes after it.
fn parse_head(head: &str) -> anyhow::Result<(u64, bool)> {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split(' ').nth(1).unwrap_or_default();
    if code != "200" {
        bail!("status {status:?}");
    }
    let mut len = None;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            len = Some(value.parse::<u64>().context("bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("unexpected Transfer-Encoding {value}");
        }
    }
    Ok((len.context("no Content-Length")?, close))
}
