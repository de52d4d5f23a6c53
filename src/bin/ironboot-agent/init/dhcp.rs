//! A small DHCPv4 client (RFC 2131): DISCOVER, OFFER, REQUEST, ACK on one interface, over a
//! packet socket — the interface has no address yet, so the IP and UDP headers are written
//! here and broadcast at the link layer. The lease is not renewed: a deploy lasts minutes,
//! leases hours.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const ETH_P_IP: u16 = 0x0800;
const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;

/// What the server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Option<Ipv4Addr>,
    pub lease_secs: Option<u32>,
}

/// A DHCP message from the server, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: u8,
    pub xid: u32,
    pub yiaddr: Ipv4Addr,
    pub lease: Lease,
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A client message wrapped in IPv4 + UDP (0.0.0.0:68 → 255.255.255.255:67).
pub fn client_packet(
    kind: u8,
    xid: u32,
    mac: [u8; 6],
    request: Option<(Ipv4Addr, Option<Ipv4Addr>)>,
) -> Vec<u8> {
    let mut d = vec![0u8; 236];
    d[0] = 1; // BOOTREQUEST
    d[1] = 1; // Ethernet
    d[2] = 6;
    d[4..8].copy_from_slice(&xid.to_be_bytes());
    d[10..12].copy_from_slice(&0x8000u16.to_be_bytes()); // answer by broadcast
    d[28..34].copy_from_slice(&mac);
    d.extend_from_slice(&MAGIC);
    d.extend_from_slice(&[53, 1, kind]);
    d.extend_from_slice(&[61, 7, 1]);
    d.extend_from_slice(&mac);
    d.extend_from_slice(&[55, 6, 1, 3, 6, 15, 51, 54]);
    d.extend_from_slice(&[57, 2, 0x05, 0xdc]);
    if let Some((ip, server)) = request {
        d.extend_from_slice(&[50, 4]);
        d.extend_from_slice(&ip.octets());
        if let Some(s) = server {
            d.extend_from_slice(&[54, 4]);
            d.extend_from_slice(&s.octets());
        }
    }
    d.push(255);
    let udp_len = 8 + d.len();
    let total = 20 + udp_len;
    let mut p = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255,
    ];
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    let sum = checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    p.extend_from_slice(&SERVER_PORT.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    // A zero UDP checksum means "none" over IPv4.
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&d);
    p
}

fn ip4(b: &[u8]) -> Option<Ipv4Addr> {
    (b.len() >= 4).then(|| Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

/// Parses an IPv4 packet; `Some` for a DHCP server message to the client port.
pub fn parse_reply(p: &[u8]) -> Option<Reply> {
    if p.len() < 20 || p[0] >> 4 != 4 || p[9] != 17 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let udp = p.get(ihl..)?;
    if udp.len() < 8 || u16::from_be_bytes([udp[2], udp[3]]) != CLIENT_PORT {
        return None;
    }
    let d = &udp[8..];
    if d.len() < 240 || d[0] != 2 || d[236..240] != MAGIC {
        return None;
    }
    let mut lease = Lease {
        ip: ip4(&d[16..20])?,
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        router: None,
        dns: Vec::new(),
        server: None,
        lease_secs: None,
    };
    let mut kind = 0;
    let mut at = 240;
    while at < d.len() {
        let code = d[at];
        if code == 255 {
            break;
        }
        if code == 0 {
            at += 1;
            continue;
        }
        let len = usize::from(*d.get(at + 1)?);
        let v = d.get(at + 2..at + 2 + len)?;
        match code {
            53 if len == 1 => kind = v[0],
            1 => lease.netmask = ip4(v)?,
            3 => lease.router = ip4(v),
            6 => lease.dns = v.chunks(4).filter_map(ip4).collect(),
            51 if len == 4 => lease.lease_secs = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
            54 => lease.server = ip4(v),
            _ => {}
        }
        at += 2 + len;
    }
    Some(Reply {
        kind,
        xid: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
        yiaddr: lease.ip,
        lease,
    })
}

struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    fn open(ifindex: i32) -> std::io::Result<Self> {
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_IP.to_be()),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let addr = Self::addr(ifindex, [0; 6]);
        // SAFETY: bind with a sockaddr_ll of the right size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex })
    }

    fn addr(ifindex: i32, dest: [u8; 6]) -> libc::sockaddr_ll {
        let mut sll_addr = [0u8; 8];
        sll_addr[..6].copy_from_slice(&dest);
        libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: ETH_P_IP.to_be(),
            sll_ifindex: ifindex,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 6,
            sll_addr,
        }
    }

    fn broadcast(&self, packet: &[u8]) -> std::io::Result<()> {
        let addr = Self::addr(self.ifindex, [0xff; 6]);
        // SAFETY: sendto with a valid buffer and a sockaddr_ll of the right size.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next reply with `xid` and one of `kinds`, until `deadline`.
    fn wait(&self, xid: u32, kinds: &[u8], deadline: Instant) -> Option<Reply> {
        let mut buf = vec![0u8; 2048];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().clamp(1, 60_000) as i32) };
            if n <= 0 {
                continue;
            }
            // SAFETY: recv into a buffer of the given length.
            let got =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if got <= 0 {
                continue;
            }
            if let Some(r) = parse_reply(&buf[..got as usize])
                && r.xid == xid
                && kinds.contains(&r.kind)
            {
                return Some(r);
            }
        }
    }
}

/// A transaction id that differs between machines and boots. Not from getrandom(2): that
/// blocks until the kernel's random pool is ready, which early in a boot without a hardware
/// RNG (e.g. under emulation) can take very long; uniqueness is all DHCP needs.
fn transaction_id(mac: [u8; 6]) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let m = u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]);
    let x = (nanos ^ m.rotate_left(17)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 32) as u32 ^ x as u32
}

/// Runs DISCOVER → OFFER → REQUEST → ACK on `ifindex` until `timeout`.
pub fn obtain(ifname: &str, ifindex: i32, mac: [u8; 6], timeout: Duration) -> Option<Lease> {
    let sock = match PacketSocket::open(ifindex) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(interface = ifname, error = %e, "no DHCP: cannot open a packet socket");
            return None;
        }
    };
    let deadline = Instant::now() + timeout;
    let xid = transaction_id(mac);
    let mut backoff = Duration::from_secs(2);
    while Instant::now() < deadline {
        let round = (Instant::now() + backoff).min(deadline);
        backoff = (backoff * 2).min(Duration::from_secs(8));
        if let Err(e) = sock.broadcast(&client_packet(DISCOVER, xid, mac, None)) {
            tracing::warn!(interface = ifname, error = %e, "DHCPDISCOVER not sent");
        }
        let Some(offer) = sock.wait(xid, &[OFFER], round) else {
            continue;
        };
        let req = client_packet(REQUEST, xid, mac, Some((offer.yiaddr, offer.lease.server)));
        if sock.broadcast(&req).is_err() {
            continue;
        }
        match sock.wait(
            xid,
            &[ACK, NAK],
            (Instant::now() + Duration::from_secs(4)).min(deadline),
        ) {
            Some(r) if r.kind == ACK => return Some(r.lease),
            Some(_) => tracing::warn!(interface = ifname, "DHCPNAK; starting over"),
            None => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server reply built like slirp's, for the parser.
    fn server_reply(kind: u8, xid: u32) -> Vec<u8> {
        let mut p = client_packet(kind, xid, [0x52, 0x54, 0, 0x12, 0x34, 0x56], None);
        // Swap ports and make it a BOOTREPLY offering 10.0.2.15 with options.
        p[20..22].copy_from_slice(&SERVER_PORT.to_be_bytes());
        p[22..24].copy_from_slice(&CLIENT_PORT.to_be_bytes());
        p[28] = 2;
        p[28 + 16..28 + 20].copy_from_slice(&[10, 0, 2, 15]);
        let opts_at = 28 + 240;
        p.truncate(opts_at);
        p.extend_from_slice(&[53, 1, kind, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2]);
        p.extend_from_slice(&[
            6, 4, 10, 0, 2, 3, 51, 4, 0, 1, 81, 128, 54, 4, 10, 0, 2, 2, 255,
        ]);
        p
    }

    #[test]
    fn client_packets_have_valid_headers() {
        let p = client_packet(DISCOVER, 0xdead_beef, [1, 2, 3, 4, 5, 6], None);
        assert_eq!(checksum(&p[..20]), 0, "IPv4 header checksum");
        assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len());
        assert_eq!(&p[16..20], &[255, 255, 255, 255]);
        assert_eq!(&p[28 + 4..28 + 8], &0xdead_beefu32.to_be_bytes());
        assert_eq!(&p[28 + 236..28 + 240], &MAGIC);
        assert_eq!(&p[28 + 240..28 + 243], &[53, 1, DISCOVER]);
    }

    #[test]
    fn transaction_ids_differ_between_machines() {
        let a = transaction_id([0x52, 0x54, 0, 0, 0, 1]);
        let b = transaction_id([0x52, 0x54, 0, 0, 0, 2]);
        assert_ne!(a, b);
    }

    #[test]
    fn replies_are_parsed() {
        let r = parse_reply(&server_reply(OFFER, 7)).unwrap();
        assert_eq!((r.kind, r.xid), (OFFER, 7));
        assert_eq!(r.lease.ip, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(r.lease.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(r.lease.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(r.lease.lease_secs, Some(86400));
        assert_eq!(r.lease.server, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert!(
            parse_reply(&client_packet(DISCOVER, 7, [0; 6], None)).is_none(),
            "not to port 68"
        );
    }
}
