//! Bringing the network up in the ramdisk: loopback, then every Ethernet NIC up, DHCP on
//! those with a link (all at once), the addresses set, and one default route — through the
//! boot NIC's router (`BOOTIF`) when it got a lease, else the first lease's.

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ironboot::model::MacAddress;

use super::dhcp::{self, Lease};

const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
const SIOCSIFADDR: libc::c_ulong = 0x8916;
const SIOCSIFNETMASK: libc::c_ulong = 0x891c;
const SIOCADDRT: libc::c_ulong = 0x890b;
const RTF_UP: u16 = 0x1;
const RTF_GATEWAY: u16 = 0x2;
/// How long NIC drivers get to register their devices after the modules loaded.
const NIC_WAIT: Duration = Duration::from_secs(10);
const CARRIER_WAIT: Duration = Duration::from_secs(5);
const DHCP_TIMEOUT: Duration = Duration::from_secs(30);

/// `struct ifreq` (name + the 24-byte union) for the address and flag ioctls.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    data: [u8; 24],
}

/// `struct rtentry` of the SIOCADDRT ioctl (x86_64 layout via repr(C)).
#[repr(C)]
struct RtEntry {
    pad1: libc::c_ulong,
    dst: libc::sockaddr_in,
    gateway: libc::sockaddr_in,
    genmask: libc::sockaddr_in,
    flags: libc::c_ushort,
    pad2: libc::c_short,
    pad3: libc::c_ulong,
    pad4: *mut libc::c_void,
    metric: libc::c_short,
    dev: *mut libc::c_char,
    mtu: libc::c_ulong,
    window: libc::c_ulong,
    irtt: libc::c_ushort,
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    }
}

struct Ctl(OwnedFd);

impl Ctl {
    fn open() -> std::io::Result<Ctl> {
        // SAFETY: plain socket(2); owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(Ctl(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ioctl<T>(&self, req: libc::c_ulong, arg: &mut T) -> std::io::Result<()> {
        // SAFETY: `arg` is the structure the request expects, valid for the call.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), req as _, arg as *mut T) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn ifreq(name: &str) -> IfReq {
        let mut r = IfReq {
            name: [0; 16],
            data: [0; 24],
        };
        let n = name.len().min(15);
        r.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        r
    }

    fn up(&self, name: &str) -> std::io::Result<()> {
        let mut r = Self::ifreq(name);
        self.ioctl(SIOCGIFFLAGS, &mut r)?;
        let flags = i16::from_ne_bytes([r.data[0], r.data[1]]) | libc::IFF_UP as i16;
        r.data[..2].copy_from_slice(&flags.to_ne_bytes());
        self.ioctl(SIOCSIFFLAGS, &mut r)
    }

    fn set_addr(&self, name: &str, req: libc::c_ulong, ip: Ipv4Addr) -> std::io::Result<()> {
        let mut r = Self::ifreq(name);
        let sa = sockaddr(ip);
        // SAFETY: sockaddr_in is 16 plain bytes; the union has room for it.
        let bytes: [u8; 16] = unsafe { std::mem::transmute(sa) };
        r.data[..16].copy_from_slice(&bytes);
        self.ioctl(req, &mut r)
    }

    fn default_route(&self, name: &str, gateway: Ipv4Addr) -> std::io::Result<()> {
        let dev = CString::new(name).map_err(std::io::Error::other)?;
        let mut rt = RtEntry {
            pad1: 0,
            dst: sockaddr(Ipv4Addr::UNSPECIFIED),
            gateway: sockaddr(gateway),
            genmask: sockaddr(Ipv4Addr::UNSPECIFIED),
            flags: RTF_UP | RTF_GATEWAY,
            pad2: 0,
            pad3: 0,
            pad4: std::ptr::null_mut(),
            metric: 0,
            dev: dev.as_ptr().cast_mut(),
            mtu: 0,
            window: 0,
            irtt: 0,
        };
        self.ioctl(SIOCADDRT, &mut rt)
    }
}

/// Ethernet NICs: (name, MAC).
fn nics() -> Vec<(String, [u8; 6])> {
    crate::agent::interfaces()
        .iter()
        .filter_map(|i| {
            let mac = MacAddress::parse(i["mac_address"].as_str()?).ok()?;
            let mut b = [0u8; 6];
            for (k, o) in mac.as_str().split(':').enumerate() {
                b[k] = u8::from_str_radix(o, 16).ok()?;
            }
            Some((i["name"].as_str()?.to_string(), b))
        })
        .collect()
}

fn carrier(name: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{name}/carrier")).is_ok_and(|c| c.trim() == "1")
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    tracing::warn!(timeout = ?timeout, "gave up waiting for {what}");
    false
}

/// Brings the network up; returns the leases obtained, by interface.
pub fn bring_up(bootif: Option<&MacAddress>) -> Vec<(String, Lease)> {
    let ctl = match Ctl::open() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no network configuration socket");
            return Vec::new();
        }
    };
    if let Err(e) = ctl.up("lo") {
        tracing::warn!(error = %e, "loopback not up");
    }
    wait_for("a network interface", NIC_WAIT, || !nics().is_empty());
    let all = nics();
    tracing::info!(nics = ?all.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), "bringing the NICs up");
    for (name, _) in &all {
        if let Err(e) = ctl.up(name) {
            tracing::warn!(interface = %name, error = %e, "interface not up");
        }
    }
    wait_for("a link", CARRIER_WAIT, || {
        all.iter().any(|(n, _)| carrier(n))
    });
    let handles: Vec<_> = all
        .iter()
        .filter(|(n, _)| carrier(n))
        .filter_map(|(name, mac)| {
            let index = CString::new(name.as_str()).ok().map(|c| {
                // SAFETY: a NUL-terminated interface name.
                unsafe { libc::if_nametoindex(c.as_ptr()) as i32 }
            })?;
            let (name, mac) = (name.clone(), *mac);
            Some(std::thread::spawn(move || {
                let lease = dhcp::obtain(&name, index, mac, DHCP_TIMEOUT);
                (name, mac, lease)
            }))
        })
        .collect();
    let mut leases = Vec::new();
    let mut route: Option<(String, Ipv4Addr, bool)> = None;
    for h in handles {
        let Ok((name, mac, Some(lease))) = h.join() else {
            continue;
        };
        let addr = ctl
            .set_addr(&name, SIOCSIFADDR, lease.ip)
            .and_then(|()| ctl.set_addr(&name, SIOCSIFNETMASK, lease.netmask));
        match addr {
            Ok(()) => tracing::info!(interface = %name, ip = %lease.ip, netmask = %lease.netmask,
                router = ?lease.router, "DHCP lease"),
            Err(e) => {
                tracing::error!(interface = %name, error = %e, "cannot set the leased address")
            }
        }
        let is_boot = bootif.is_some_and(|b| b.as_str() == format_mac(&mac));
        if let Some(gw) = lease.router
            && (route.is_none() || (is_boot && !route.as_ref().is_some_and(|r| r.2)))
        {
            route = Some((name.clone(), gw, is_boot));
        }
        leases.push((name, lease));
    }
    if let Some((name, gw, _)) = route {
        match ctl.default_route(&name, gw) {
            Ok(()) => tracing::info!(interface = %name, gateway = %gw, "default route"),
            Err(e) => {
                tracing::error!(interface = %name, error = %e, "cannot add the default route")
            }
        }
    }
    write_resolv_conf(&leases);
    if leases.is_empty() {
        tracing::error!("no DHCP lease on any interface: the conductor will not be reachable");
    }
    leases
}

fn format_mac(b: &[u8; 6]) -> String {
    b.iter()
        .map(|o| format!("{o:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn write_resolv_conf(leases: &[(String, Lease)]) {
    let servers: Vec<String> = leases
        .iter()
        .flat_map(|(_, l)| l.dns.iter().map(|d| format!("nameserver {d}\n")))
        .collect();
    if servers.is_empty() {
        return;
    }
    let _ = std::fs::create_dir_all("/etc");
    if let Err(e) = std::fs::write("/etc/resolv.conf", servers.concat()) {
        tracing::warn!(error = %e, "cannot write /etc/resolv.conf");
    }
}
