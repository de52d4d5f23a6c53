//! A firmware-like TFTP client: RRQ with `blksize` (and `windowsize` when asked), ACKs as
//! RFC 1350 / 7440 say, retransmits on a timeout, locks onto the server's transfer port.
//! The bytes go through a CRC-32 as they arrive; nothing is kept.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::UdpSocket;

const OP_RRQ: u16 = 1;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;

/// How a node asks for its loader.
#[derive(Debug, Clone, Copy)]
pub struct TftpAsk {
    pub blksize: usize,
    /// `None`: lock-step (no windowsize option).
    pub windowsize: Option<u16>,
    /// First retransmission timeout; doubled on each retry, as iPXE does.
    pub timeout: Duration,
    pub retries: u32,
}

/// What arrived: length and CRC-32 of the bytes, and whether a window was granted.
pub struct Fetched {
    pub len: u64,
    pub crc: u32,
    pub window: u16,
}

/// The transfer state after the request is out.
struct Transfer {
    sock: UdpSocket,
    peer: Option<SocketAddr>,
    blksize: usize,
    window: u16,
    /// Last block received in order (0 before any).
    last: u16,
    acked: u16,
    hasher: crc32fast::Hasher,
    len: u64,
}

pub async fn fetch(server: SocketAddr, file: &str, ask: TftpAsk) -> anyhow::Result<Fetched> {
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .context("binding UDP")?;
    let rrq = request(file, ask);
    sock.send_to(&rrq, server).await.context("sending RRQ")?;
    let mut t = Transfer {
        sock,
        peer: None,
        blksize: 512,
        window: 1,
        last: 0,
        acked: 0,
        hasher: crc32fast::Hasher::new(),
        len: 0,
    };
    let mut buf = vec![0u8; ask.blksize + 4];
    let mut timeout = ask.timeout;
    let mut retries = 0;
    loop {
        let (n, from) = match tokio::time::timeout(timeout, t.sock.recv_from(&mut buf)).await {
            Ok(r) => r.context("receiving")?,
            Err(_) => {
                retries += 1;
                if retries > ask.retries {
                    bail!("timed out after {retries} tries at block {}", t.last);
                }
                timeout = (timeout * 2).min(Duration::from_secs(8));
                match t.peer {
                    None => t.sock.send_to(&rrq, server).await?,
                    Some(peer) => t.sock.send_to(&ack(t.last), peer).await?,
                };
                continue;
            }
        };
        match t.peer {
            Some(peer) if peer != from => continue,
            None if from.ip() != server.ip() => continue,
            _ => {}
        }
        let first = t.peer.is_none();
        t.peer = Some(from);
        if t.packet(&buf[..n], first, ask).await? {
            break;
        }
        retries = 0;
        timeout = ask.timeout;
    }
    Ok(Fetched {
        len: t.len,
        crc: t.hasher.finalize(),
        window: t.window,
    })
}

impl Transfer {
    /// Handles one packet from the server; `true` when the transfer is complete.
    async fn packet(&mut self, p: &[u8], first: bool, ask: TftpAsk) -> anyhow::Result<bool> {
        if p.len() < 4 {
            bail!("short packet ({} bytes)", p.len());
        }
        let op = u16::from_be_bytes([p[0], p[1]]);
        let peer = self.peer.context("no peer")?;
        match op {
            OP_OACK if first => {
                self.options(&p[2..], ask)?;
                self.sock.send_to(&ack(0), peer).await?;
                Ok(false)
            }
            OP_DATA => {
                let block = u16::from_be_bytes([p[2], p[3]]);
                self.data(block, &p[4..]).await
            }
            OP_ERROR => bail!(
                "server error {}: {}",
                u16::from_be_bytes([p[2], p[3]]),
                String::from_utf8_lossy(&p[4..]).trim_end_matches('\0')
            ),
            OP_OACK => Ok(false),
            other => bail!("unexpected opcode {other}"),
        }
    }

    async fn data(&mut self, block: u16, data: &[u8]) -> anyhow::Result<bool> {
        let peer = self.peer.context("no peer")?;
        if block != self.last.wrapping_add(1) {
            // A duplicate or a gap: in lock-step re-ACK (the ACK was lost); with a window,
            // ACK the last good block once so the server resends from there (RFC 7440).
            if self.window == 1 || self.acked != self.last {
                self.sock.send_to(&ack(self.last), peer).await?;
                self.acked = self.last;
            }
            return Ok(false);
        }
        if data.len() > self.blksize {
            bail!(
                "block {block} has {} bytes > blksize {}",
                data.len(),
                self.blksize
            );
        }
        self.last = block;
        self.hasher.update(data);
        self.len += data.len() as u64;
        let done = data.len() < self.blksize;
        // The window counts from block 1: blocks w, 2w, ... end a window.
        if done || self.window == 1 || block.is_multiple_of(self.window) {
            self.sock.send_to(&ack(block), peer).await?;
            self.acked = block;
        }
        Ok(done)
    }

    fn options(&mut self, opts: &[u8], ask: TftpAsk) -> anyhow::Result<()> {
        let mut parts = opts.split(|&b| b == 0);
        while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            let value: usize = String::from_utf8_lossy(value).parse().unwrap_or(0);
            match name.as_str() {
                "blksize" if (8..=ask.blksize).contains(&value) => self.blksize = value,
                "windowsize" if ask.windowsize.is_some() && (1..=65535).contains(&value) => {
                    self.window = u16::try_from(value)?;
                }
                "tsize" | "" => {}
                other => bail!("server acknowledged an option not asked for: {other}={value}"),
            }
        }
        Ok(())
    }
}

fn request(file: &str, ask: TftpAsk) -> Vec<u8> {
    let mut p = OP_RRQ.to_be_bytes().to_vec();
    let mut field = |s: &str| {
        p.extend_from_slice(s.as_bytes());
        p.push(0);
    };
    field(file);
    field("octet");
    field("blksize");
    field(&ask.blksize.to_string());
    field("tsize");
    field("0");
    if let Some(w) = ask.windowsize {
        field("windowsize");
        field(&w.to_string());
    }
    p
}

fn ack(block: u16) -> [u8; 4] {
    let [a, b] = OP_ACK.to_be_bytes();
    let [c, d] = block.to_be_bytes();
    [a, b, c, d]
}
